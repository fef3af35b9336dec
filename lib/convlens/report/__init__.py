"""`convlens report`: one self-contained HTML page from run, sweep and analysis folders.

Every figure is embedded as a base64 data URI and all CSS is inline, so the page opens
offline and can be mailed or attached as one file. A folder is recognised by what it
holds: summary.json (a training run), trials.csv (a sweep), index.json (an analysis).
The report reads files only: it imports neither torch, Ray nor the analysis package, so
`convlens report` starts at once; what it says about analysis methods comes from index.json.

html (building blocks) -> runs, sweeps, analysis (sections) -> page (discovery, write_report).
"""
