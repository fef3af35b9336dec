"""What a run leaves on disk, and reading it back:

    files.py       small files written atomically (temp file, fsync, rename), and read back
    rundir.py      the folders convlens writes (run, sweep, demo, analysis) and every file name in them
    checkpoint.py  checkpoint folders written atomically and verified against their manifest on load
    restore.py     a trained network and its data, rebuilt from what a checkpoint recorded
"""
