"""The event sources: `landing` (a folder of JSON Lines files, with its `landing_index` of which
files hold which days and its `landing_scan` of a day on every core) and `sql` (a table).
`lines`: what both share, above all which day a line belongs to."""
