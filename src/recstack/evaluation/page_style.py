"""The page style every recstack HTML report shares (evaluation, tuning, monitoring, retraining, recstack-auto).

A module of its own, without imports, so that a report with no model in it (monitoring) does not load torch with
the evaluator just to style its page.
"""

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#222;
line-height:1.45;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1.2em 0 .3em}
.meta{color:#666;font-size:.9em}.verdict{background:#f3f7ee;border-left:4px solid #6a9f3a;padding:10px 14px;
font-size:1.02em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f5f5f5}
td.name,th.name{text-align:left;font-weight:600}td.best{background:#dff0d8;font-weight:700}
.scroll{overflow-x:auto}.fig svg{max-width:100%;height:auto}.note{color:#666;font-size:.85em}
"""
