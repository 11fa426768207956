"""``iot_edge``: an Azure IoT Edge deployment manifest that runs the scoring image as a module."""
