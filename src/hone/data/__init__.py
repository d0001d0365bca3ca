"""Data: rows on disk → canonical Conversations → token ids and labels → batches."""
