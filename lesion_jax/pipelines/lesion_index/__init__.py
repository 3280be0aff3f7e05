"""Pipeline 5, the Lesion Indexing Network (Li and Shen, Sensors 2018): FCRNs + LICU, and the LFN.
Here: `task` (the FCRN task, the LIN pipeline), `feature_network` (the LFN task), `ops`, `licu`."""
