"""raywse.models"""
