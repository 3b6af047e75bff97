"""Export files: where they are kept, how they are written and when they go
(``storage``)."""
