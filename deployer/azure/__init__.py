"""What every Azure-facing part of deployer shares: the cloud and the credential.

Imported only by the commands that talk to Azure; the SDKs themselves are imported inside
the functions that need them (``deployer validate`` imports none).
"""
