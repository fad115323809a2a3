"""raywse.train"""
