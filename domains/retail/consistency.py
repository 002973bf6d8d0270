from domains.retail.models import RetailDB
def check_retail_db(db: RetailDB) -> list[str]:
    return []
