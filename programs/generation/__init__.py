"""Generation: exploration, task writing, intent adaptation and the pipeline that runs them."""
