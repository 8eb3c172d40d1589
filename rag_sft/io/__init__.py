"""Reading event sources and writing the warehouse and dataset files."""
