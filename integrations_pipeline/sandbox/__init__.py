"""Sandbox vendors: local servers that behave like Trackstar, Salestrekker, SALESmanago, Datatalks and Trakor."""
