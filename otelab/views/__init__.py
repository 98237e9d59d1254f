"""Views: plotly panels from a report, the ipywidgets workbench UI, the self-contained HTML report.

Imported from their modules (``otelab.views.widgets`` needs ipywidgets) so that ``import otelab`` stays light.
"""
