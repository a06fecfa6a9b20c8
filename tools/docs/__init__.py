"""Documentation builders: the reference pages generated from the code, and the MkDocs hook that inserts them."""
