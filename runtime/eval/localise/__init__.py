"""Localisation (Appendix A): the nets' boxes, centre crop or dense, merged and scored."""
