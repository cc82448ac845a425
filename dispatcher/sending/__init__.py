"""Sending: send-definition and send request models, Liquid templates, tracking, MIME
building and mail transports. Pure and framework-free; the API and delivery layers
compose these pieces.
"""
