"""Very deep features (Appendix B): dense multi-scale descriptors and linear classifiers on them."""
