"""Reports: results of many runs as a table, figures and a Markdown summary (`datadiet report`).

build     build_report, the one entry point: read inputs, run the registry, publish
registry  ReportConfig, ReportInputs, Part and PARTS: every figure and table, in summary.md order
runs      run folders read into RunRecords (the only module that knows a run folder's files)
scores    scored manifests read into score sources, correlations, class balance, contact sheets
stats     pure numbers: cells over seeds, scaling-law fits, Spearman, balance curves, overlaps
figures   matplotlib drawings of that data
markdown  summary.md and its sections
publish   the staging folder and the all-or-nothing move into OUT_DIR
"""
