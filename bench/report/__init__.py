"""Statistics, results and the leaderboard: intervals, summaries, power, expectations, result lines
and their migration and integrity, regression checks, submissions, tables and pages."""
