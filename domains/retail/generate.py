from domains.retail.models import RetailDB
def generate_retail_db(seed: int, users: int) -> RetailDB:
    raise NotImplementedError
