"""raywse.data"""
