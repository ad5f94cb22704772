"""Analysis of finished runs: paired comparison of two runs, and the HTML report of a run or a comparison."""
