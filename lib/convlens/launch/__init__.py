"""Launching jobs on Slurm clusters (Ray across the nodes: convlens.raycluster):

    sbatch.py     the batch script of a cluster profile (sbatch parameters, setup lines, command)
    container.py  what the compute nodes run a job with: a Python, or an image's inside a container
    slurm.py      `convlens submit`: validate the job, write its spec, submit it with submitit
    slurmjob.py   what runs on the allocation: the job on one node, or Ray across its nodes first
    jobstate.py   a Slurm job's state without accounting, and its end: the result or its error
    follow.py     `convlens follow` and `submit --wait`: a job followed from the login node
"""
