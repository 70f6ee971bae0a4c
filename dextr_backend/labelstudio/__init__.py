"""Label Studio's side of the work: its /predict bodies read into tool-neutral segmentation items,
masks written back as its regions, its pictures fetched by its rules, and its projects exported
for retraining. The HTTP routes are :mod:`dextr_backend.labelstudio_api`."""
