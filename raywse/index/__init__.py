"""raywse.index: batch embedding with Ray Data actors, the versioned FAISS index, and search by checkpoint."""
