"""Widgets the panes and screens share."""
