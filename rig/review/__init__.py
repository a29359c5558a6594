"""The review terminal: a local web page where people confirm diverted items, and what their labels feed
(dataset export, threshold tuning, packaging-drift detection and gallery enrollment)."""
