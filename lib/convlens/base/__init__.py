"""What every layer uses, depending on nothing else of convlens:

    errors.py    the errors convlens reports to a user, each with the CLI's exit code
    progress.py  how work shows its progress: a bar on a terminal, a line every ~10% otherwise
    startup.py   what every convlens process does first: fewer garbage collections
"""
