"""Lip-sync itself: the option table, the frame kernel, the offline chain, live and preview."""
