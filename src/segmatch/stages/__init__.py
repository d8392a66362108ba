"""One module per stage; each stage is an engine-neutral function named after what it makes."""
