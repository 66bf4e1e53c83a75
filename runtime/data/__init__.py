"""Images and augmentation: reading folders, the paper's training crops, demo data."""
