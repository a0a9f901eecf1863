"""The code MLflow runs to load lungcad's pyfunc model ("models from code").

Logging the model this way stores no pickled Python object: loading it runs this file
(from the model's own code) and reads the checkpoint artifact with weights-only loading.
"""

from mlflow.models import set_model

from lungcad.tracking.pyfunc import LungcadPyfunc

set_model(LungcadPyfunc())
