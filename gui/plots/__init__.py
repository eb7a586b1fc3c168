"""The live plots and the results table (pyqtgraph, Qt model/view)."""
