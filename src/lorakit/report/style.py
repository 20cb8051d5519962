"""The report's stylesheet, inlined into every page (system fonts, no web fonts, no images)."""

CSS = """
:root { --ink: #1d2430; --muted: #5d6776; --line: #dde2ea; --soft: #f5f7fa; --accent: #1f77b4;
        --bar: rgba(31, 119, 180, 0.18); }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 8px; }
h1 { font-size: 26px; margin: 0 0 6px; overflow-wrap: anywhere; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
section { margin-bottom: 8px; }
.note { color: var(--muted); margin: 0 0 10px; font-size: 14px; }
.facts { display: flex; flex-wrap: wrap; gap: 6px; margin: 6px 0 18px; padding: 0; list-style: none; }
.facts li { background: var(--soft); border: 1px solid var(--line); border-radius: 999px; padding: 2px 11px;
            font-size: 13px; overflow-wrap: anywhere; }
.facts b { color: var(--muted); font-weight: 600; margin-right: 4px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; background: var(--soft); }
.card .label { color: var(--muted); font-size: 13px; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 25px; font-weight: 650; font-variant-numeric: tabular-nums; margin: 2px 0; }
.card .sub { color: var(--muted); font-size: 13px; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px;
           align-items: start; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; text-align: center; }
figure.wide { grid-column: 1 / -1; }
figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left; vertical-align: top; }
thead th { background: var(--soft); position: sticky; top: 0; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.score { background-image: linear-gradient(90deg, var(--bar) var(--v), transparent var(--v)); }
td.summary { font-weight: 600; border-top: 2px solid var(--line); }
table.texts { width: 100%; }
table.texts td.text { max-width: 640px; white-space: pre-wrap; overflow-wrap: anywhere; }
table.confusion td, table.confusion th { text-align: center; padding: 4px 7px; min-width: 38px; }
table.confusion th.true { text-align: right; }
table.confusion thead th { vertical-align: bottom; }
table.confusion th.vertical { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left;
                              padding: 7px 4px; }
table.kv td:first-child { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
                          color: var(--muted); }
table.kv td { overflow-wrap: anywhere; max-width: 760px; }
details { margin-top: 8px; }
summary { cursor: pointer; font-weight: 600; }
footer { max-width: 1240px; margin: 28px auto; padding: 0 28px; color: var(--muted); font-size: 12px; }
"""
