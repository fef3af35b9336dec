"""Ray for a job: the environment of its processes, the cluster it runs on, one node or many:

    env.py         settings read when ray is imported, the variables forwarded to every worker,
                   task and trial, and how much of Ray's logging is shown (`convlens --verbose`)
    connect.py     joining a cluster or starting a private one-node Ray, checking a request fits
                   it, waiting for a worker's line in the driver's output
    allocation.py  what Slurm granted the job on a node, and the Ray sized to fit in it
    nodes.py       Ray across a Slurm allocation: the head on the first node, a worker on each other
"""
