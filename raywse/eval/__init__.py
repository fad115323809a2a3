"""raywse.eval"""
