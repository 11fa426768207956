"""``kubernetes``: Deployment, Service and HorizontalPodAutoscaler for AKS or any cluster."""
