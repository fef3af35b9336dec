"""Launching jobs on clusters: the batch script (sbatch.py), Slurm via submitit (slurm.py), Ray across nodes (raynodes.py)."""
