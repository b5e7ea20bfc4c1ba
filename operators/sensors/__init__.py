"""Sensors: gate a step on the arrival of the artifact it needs, waiting in the triggerer."""
