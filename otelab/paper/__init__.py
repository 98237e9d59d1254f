"""The paper as data: its claims, tables and set-up (``claims``) and the recorded 2,000-edit protocol (``protocol``)."""
