"""The worker: runs one routed job through infer → measure → encode with resident engines
(`runner`). May import every stage below `app`.
"""
