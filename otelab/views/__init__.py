"""Views: plotly panels from a report, the ipywidgets workbench UI, the self-contained HTML report.

``style`` (the shared look), ``panels`` (the builders and :data:`otelab.views.panels.PANELS`, the
table the workbench and the HTML report loop over), ``recorded`` (recorded stream runs),
``widgets`` / ``controls`` / ``scrubber`` (ipywidgets), ``html_report``. Imported from their modules
(``otelab.views.widgets`` needs ipywidgets) so that ``import otelab`` stays light.
"""
