"""Launching jobs on clusters: cluster profiles (profile.py), Slurm via submitit (slurm.py), Ray across nodes (raynodes.py)."""
