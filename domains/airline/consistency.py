def check_airline_db(db):
    return []
