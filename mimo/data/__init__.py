"""Data: the built-in reasoning problems, loaders for the user's corpora and chats, sequence packing."""
