"""The paper as data: its printed tables (``tables``), claims and set-up (``claims``), and the recorded
2,000-edit protocol (``runs``, ``scores``, ``verdicts``; ``protocol`` gathers them and writes the markdown)."""
