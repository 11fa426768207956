"""inference_schema decorators: arguments come from the JSON body, swagger from the schema."""

from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", StandardPythonParameterType([[1.0, 2.0, 3.0]]))
@input_schema("scale", StandardPythonParameterType(2.0), optional=True)
@output_schema(StandardPythonParameterType([6.0]))
def run(data, scale=1.0):
    if scale < 0:
        raise ValueError("negative scale")
    return [sum(row) * scale for row in data]
