"""Built-in token reducers, declared in the ``tokred.reducers`` entry-point group."""
