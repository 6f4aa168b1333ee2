"""Lip-sync scores: SyncNet v2 LSE-D / LSE-C, AV offset, tracks."""
