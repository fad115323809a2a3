"""raywse.tune"""
