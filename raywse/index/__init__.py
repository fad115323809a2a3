"""raywse.index"""
