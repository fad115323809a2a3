"""raywse.zoo"""
