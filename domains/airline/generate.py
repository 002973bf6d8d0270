def generate_airline_db(seed, users):
    raise NotImplementedError
