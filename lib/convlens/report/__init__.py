"""`convlens report`: one self-contained HTML page from run, sweep and analysis folders.

Every figure is embedded as a base64 data URI and all CSS is inline, so the page opens
offline and can be mailed or attached as one file. A folder is recognised by what it
holds: summary.json (a training run), trials.csv (a sweep), index.json (an analysis).
The report reads files only: it imports neither torch, Ray nor the analysis package, so
`convlens report` starts at once; what it says about analysis methods comes from index.json.

html (building blocks) -> runs, sweeps, analysis (sections) -> page (discovery, write_report).

    html.py               building blocks: the page frame, escaped text, embedded figures, tables
    runs.py               training runs: the loss explained once and a section per run
    sweeps.py             a sweep: its trials table, the best configuration, and its figures
    analysis.py           an analysis folder: one subsection per method, read from its index.json
    compare.py            supervised vs. rotation: scores, the probe table, kNN retrievals side by side
    page.py               the whole page: find the folders, render their sections, write one file
    markdown.py           `convlens report --markdown`: the README's results block from a demo's files
    markdown_analysis.py  the analysis part of that block: faithfulness, Grad-CAM by stage, CKA
    words.py              numbers as the results block prints them, and the words that compare them
"""
