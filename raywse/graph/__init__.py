"""raywse.graph"""
